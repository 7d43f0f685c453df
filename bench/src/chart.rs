//! `keyward-bench chart`: throughput against concurrent clients as PNG charts, one per
//! benchmark family (local keys, PKCS#11, cloud), redrawn from the JSON documents written with
//! `--json-out` (as `scripts/bench` keeps them), without running anything.
//!
//! Text is drawn with `ab_glyph` from a TTF read at run time (no fontconfig or freetype); when
//! the font file is missing the charts are skipped with a warning, not an error.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use anyhow::{Context as _, Result, anyhow, bail};
use clap::Args;
use plotters::prelude::*;
use serde_json::Value;

/// The font of Debian's `fonts-dejavu-core`.
pub const DEFAULT_FONT: &str = "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf";

/// `keyward-bench chart`
#[derive(Debug, Args)]
#[command(after_help = CHART_AFTER_HELP)]
pub struct ChartArgs {
    /// JSON documents from --json-out, or directories holding them (every *.json in it)
    #[arg(long, required = true, num_args = 1.., value_name = "DIR_OR_JSON")]
    pub input: Vec<PathBuf>,
    /// Where to write local.png, pkcs11.png and cloud.png (created if missing)
    #[arg(long, value_name = "DIR")]
    pub output: PathBuf,
    /// The TrueType font for the text; without it no chart is drawn
    #[arg(long, value_name = "FILE", default_value = DEFAULT_FONT)]
    pub font: PathBuf,
}

const CHART_AFTER_HELP: &str = "\
One PNG per benchmark family found in the inputs: local.png (latency documents: keyward's
local backend in the daemon or in a plugin process, the in-process OpenSSL floor, ssh-agent,
gpg-agent), pkcs11.png (keyward vs cryptoki directly) and cloud.png (keyward vs the emulators'
own clients). Each line is one series (key type and path): signatures per second against
concurrent clients, both axes logarithmic, ticks at the client counts measured. A series
measured at a single client count (the floors) is a lone marker. A series measured twice at
the same client count (the in-process floor is in both latency.json and isolation.json) is
drawn at its highest throughput. The written files are printed, one per line.

Example:
  keyward-bench chart --input ~/.cache/keyward/bench/20261125T150448Z --output docs/bench";

/// One benchmark family: one chart.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Family {
    Local,
    Pkcs11,
    Cloud,
}

impl Family {
    /// From a document's `benchmark` field; `None` for documents without throughput rows.
    fn of(benchmark: &str) -> Option<Family> {
        match benchmark {
            "latency" => Some(Family::Local),
            "pkcs11" => Some(Family::Pkcs11),
            "cloud" => Some(Family::Cloud),
            _ => None,
        }
    }

    fn file_name(self) -> &'static str {
        match self {
            Family::Local => "local.png",
            Family::Pkcs11 => "pkcs11.png",
            Family::Cloud => "cloud.png",
        }
    }

    fn title(self) -> &'static str {
        match self {
            Family::Local => "Local keys: throughput vs concurrent clients",
            Family::Pkcs11 => "PKCS#11 (SoftHSM2): throughput vs concurrent clients",
            Family::Cloud => "Cloud backends on emulators: throughput vs concurrent clients",
        }
    }
}

/// One line of a chart.
#[derive(Clone, Debug, PartialEq)]
struct Series {
    key_spec: String,
    label: String,
    /// Through keyward (drawn solid and thicker) rather than a baseline (dashed).
    keyward: bool,
    /// (clients, signs/s), sorted by clients, one point per client count.
    points: Vec<(usize, f64)>,
}

impl Series {
    fn name(&self) -> String {
        format!("{}: {}", self.key_spec, self.label)
    }
}

/// The series of one family, with the documents they came from.
#[derive(Clone, Debug, Default)]
struct Chart {
    series: Vec<Series>,
    sources: BTreeSet<String>,
    cpus: BTreeSet<u64>,
}

impl Chart {
    /// Adds one result row of a document.
    fn add(&mut self, row: &Value) -> Result<()> {
        let text = |field: &str| {
            row[field]
                .as_str()
                .map(str::to_string)
                .ok_or_else(|| anyhow!("a result has no {field:?}"))
        };
        let key_spec = text("key_spec")?;
        let label = text("label")?;
        let keyward = row["path"].as_str() == Some("agent");
        let clients = row["clients"]
            .as_u64()
            .ok_or_else(|| anyhow!("a result has no \"clients\""))? as usize;
        let per_second = row["signs_per_sec"]
            .as_f64()
            .ok_or_else(|| anyhow!("a result has no \"signs_per_sec\""))?;
        if clients == 0 || per_second.partial_cmp(&0.0) != Some(std::cmp::Ordering::Greater) {
            // Nothing to draw on logarithmic axes.
            return Ok(());
        }
        let index = match self
            .series
            .iter()
            .position(|s| s.key_spec == key_spec && s.label == label)
        {
            Some(index) => index,
            None => {
                self.series.push(Series {
                    key_spec,
                    label,
                    keyward,
                    points: Vec::new(),
                });
                self.series.len() - 1
            }
        };
        let points = &mut self.series[index].points;
        match points.iter_mut().find(|(c, _)| *c == clients) {
            Some((_, best)) => *best = best.max(per_second),
            None => {
                points.push((clients, per_second));
                points.sort_by_key(|&(c, _)| c);
            }
        }
        Ok(())
    }

    /// Key types in order of appearance; within one, keyward's series first.
    fn sort(&mut self) {
        let mut keys: Vec<String> = Vec::new();
        for s in &self.series {
            if !keys.contains(&s.key_spec) {
                keys.push(s.key_spec.clone());
            }
        }
        // Stable: the baselines keep their order; keyward's series by name, so "keyward local"
        // comes before "keyward local (plugin process)".
        self.series.sort_by_key(|s| {
            (
                keys.iter().position(|k| *k == s.key_spec),
                !s.keyward,
                if s.keyward {
                    s.label.clone()
                } else {
                    String::new()
                },
            )
        });
    }

    fn clients(&self) -> Vec<usize> {
        let set: BTreeSet<usize> = self
            .series
            .iter()
            .flat_map(|s| s.points.iter().map(|&(c, _)| c))
            .collect();
        set.into_iter().collect()
    }

    fn throughput_range(&self) -> (f64, f64) {
        let values = self
            .series
            .iter()
            .flat_map(|s| s.points.iter().map(|p| p.1));
        let min = values.clone().fold(f64::INFINITY, f64::min);
        let max = values.fold(0.0, f64::max);
        (min, max)
    }
}

/// The *.json files of `inputs`, directories expanded (sorted by name).
fn documents(inputs: &[PathBuf]) -> Result<Vec<PathBuf>> {
    let mut files = Vec::new();
    for input in inputs {
        if input.is_dir() {
            let mut found: Vec<PathBuf> = std::fs::read_dir(input)
                .with_context(|| format!("cannot read {}", input.display()))?
                .filter_map(|entry| entry.ok().map(|e| e.path()))
                .filter(|p| p.extension().is_some_and(|e| e == "json") && p.is_file())
                .collect();
            found.sort();
            files.extend(found);
        } else {
            files.push(input.clone());
        }
    }
    Ok(files)
}

/// The charts of the documents, by family.
fn collect(files: &[PathBuf]) -> Result<Vec<(Family, Chart)>> {
    let mut charts: Vec<(Family, Chart)> = Vec::new();
    for file in files {
        let text = std::fs::read_to_string(file)
            .with_context(|| format!("cannot read {}", file.display()))?;
        let document: Value = serde_json::from_str(&text)
            .with_context(|| format!("{} is not a JSON document", file.display()))?;
        let Some(family) = document["benchmark"].as_str().and_then(Family::of) else {
            continue;
        };
        let Some(results) = document["results"].as_array() else {
            continue;
        };
        let index = match charts.iter().position(|(f, _)| *f == family) {
            Some(index) => index,
            None => {
                charts.push((family, Chart::default()));
                charts.len() - 1
            }
        };
        let chart = &mut charts[index].1;
        for row in results {
            chart
                .add(row)
                .with_context(|| format!("in {}", file.display()))?;
        }
        chart.sources.insert(file.file_name().map_or_else(
            || file.display().to_string(),
            |n| n.to_string_lossy().into(),
        ));
        if let Some(cpus) = document["cpus"].as_u64().filter(|&c| c > 0) {
            chart.cpus.insert(cpus);
        }
    }
    charts.retain(|(_, chart)| chart.series.iter().any(|s| !s.points.is_empty()));
    charts.sort_by_key(|(family, _)| *family);
    for (_, chart) in &mut charts {
        chart.sort();
    }
    Ok(charts)
}

/// 1-2-5 ticks covering `min..=max`.
fn throughput_ticks(min: f64, max: f64) -> Vec<f64> {
    let mut ticks = Vec::new();
    let mut decade = 10f64.powf(min.log10().floor());
    while decade <= max {
        for step in [1.0, 2.0, 5.0] {
            let tick = decade * step;
            if tick >= min && tick <= max {
                ticks.push(tick);
            }
        }
        decade *= 10.0;
    }
    ticks
}

/// Distinguishable colours (Tableau 10, then darker variants).
const COLORS: [RGBColor; 16] = [
    RGBColor(31, 119, 180),
    RGBColor(255, 127, 14),
    RGBColor(44, 160, 44),
    RGBColor(214, 39, 40),
    RGBColor(148, 103, 189),
    RGBColor(140, 86, 75),
    RGBColor(227, 119, 194),
    RGBColor(127, 127, 127),
    RGBColor(188, 189, 34),
    RGBColor(23, 190, 207),
    RGBColor(0, 63, 92),
    RGBColor(160, 60, 0),
    RGBColor(0, 100, 0),
    RGBColor(120, 0, 60),
    RGBColor(60, 60, 160),
    RGBColor(100, 100, 0),
];

const FONT: &str = "sans-serif";
const WIDTH: u32 = 1500;
const HEIGHT: u32 = 820;
const LEGEND_WIDTH: u32 = 560;

/// The marker of a key type (by its index in the chart): a filled circle, a filled triangle, a
/// cross. `$draw` is called with the element (backend coordinates relative to `$at`).
macro_rules! with_marker {
    ($shape:expr, $at:expr, $color:expr, $draw:expr) => {
        match $shape % 3 {
            0 => $draw(EmptyElement::at($at) + Circle::new((0, 0), 6, $color.filled())),
            1 => $draw(EmptyElement::at($at) + TriangleMarker::new((0, 0), 8, $color.filled())),
            _ => $draw(
                EmptyElement::at($at)
                    + Cross::new((0, 0), 6, ShapeStyle::from($color).stroke_width(3)),
            ),
        }
    };
}

/// Draws one chart into `path`.
fn draw(family: Family, chart: &Chart, path: &Path) -> Result<()> {
    let root = BitMapBackend::new(path, (WIDTH, HEIGHT)).into_drawing_area();
    root.fill(&WHITE)?;
    let (plot_area, legend_area) = root.split_horizontally(WIDTH - LEGEND_WIDTH);

    let clients = chart.clients();
    let (min, max) = chart.throughput_range();
    let (y_min, y_max) = (min / 1.5, max * 1.5);
    let x_min = clients.first().copied().unwrap_or(1) as f64 / 1.4;
    let x_max = clients.last().copied().unwrap_or(1) as f64 * 1.4;
    let x_ticks: Vec<f64> = clients.iter().map(|&c| c as f64).collect();

    let mut plot = ChartBuilder::on(&plot_area)
        .caption(family.title(), (FONT, 24))
        .margin(16)
        .x_label_area_size(50)
        .y_label_area_size(80)
        .build_cartesian_2d(
            (x_min..x_max).log_scale().with_key_points(x_ticks),
            (y_min..y_max)
                .log_scale()
                .with_key_points(throughput_ticks(y_min, y_max)),
        )?;
    plot.configure_mesh()
        .x_desc("concurrent clients (log scale)")
        .y_desc("signatures per second (log scale)")
        .x_label_formatter(&|c| format!("{c:.0}"))
        .y_label_formatter(&|v| format!("{v:.0}"))
        .label_style((FONT, 16))
        .axis_desc_style((FONT, 17))
        .light_line_style(WHITE)
        .bold_line_style(RGBColor(215, 215, 215))
        .draw()?;

    let keys: Vec<&str> = {
        let mut keys: Vec<&str> = Vec::new();
        for s in &chart.series {
            if !keys.contains(&s.key_spec.as_str()) {
                keys.push(&s.key_spec);
            }
        }
        keys
    };
    let shape_of = |s: &Series| keys.iter().position(|k| *k == s.key_spec).unwrap_or(0);
    for (index, series) in chart.series.iter().enumerate() {
        let color = COLORS[index % COLORS.len()];
        let points: Vec<(f64, f64)> = series.points.iter().map(|&(c, v)| (c as f64, v)).collect();
        if series.keyward {
            plot.draw_series(LineSeries::new(
                points.clone(),
                ShapeStyle::from(color).stroke_width(3),
            ))?;
        } else {
            plot.draw_series(DashedLineSeries::new(
                points.clone(),
                10,
                6,
                ShapeStyle::from(color).stroke_width(2),
            ))?;
        }
        let shape = shape_of(series);
        for &point in &points {
            with_marker!(shape, point, color, |element| plot
                .draw_series(std::iter::once(element))
                .map(|_| ()))?;
        }
    }

    // The legend, beside the plot: line style, marker and name of each series.
    let legend = legend_area.margin(60, 10, 10, 10);
    let row_height = 26;
    let mut y = 0;
    for (index, series) in chart.series.iter().enumerate() {
        let color = COLORS[index % COLORS.len()];
        let mid = y + row_height / 2;
        let style = ShapeStyle::from(color).stroke_width(if series.keyward { 3 } else { 2 });
        if series.keyward {
            legend.draw(&PathElement::new(vec![(0, mid), (40, mid)], style))?;
        } else {
            legend.draw(&PathElement::new(vec![(0, mid), (12, mid)], style))?;
            legend.draw(&PathElement::new(vec![(18, mid), (30, mid)], style))?;
            legend.draw(&PathElement::new(vec![(36, mid), (40, mid)], style))?;
        }
        with_marker!(shape_of(series), (20, mid), color, |element| legend
            .draw(&element))?;
        legend.draw(&Text::new(
            series.name(),
            (52, mid - 9),
            (FONT, 16).into_font().color(&BLACK),
        ))?;
        y += row_height;
    }
    y += row_height / 2;
    let notes = [
        "solid: through keyward; dashed: baselines".to_string(),
        "a lone marker: measured with that many clients only".to_string(),
        format!(
            "data: {}",
            chart.sources.iter().cloned().collect::<Vec<_>>().join(", ")
        ),
        match chart.cpus.iter().map(u64::to_string).collect::<Vec<_>>() {
            cpus if cpus.is_empty() => String::new(),
            cpus => format!("{} CPUs, client and servers on one host", cpus.join("/")),
        },
    ];
    for note in notes.iter().filter(|n| !n.is_empty()) {
        legend.draw(&Text::new(
            note.clone(),
            (0, y),
            (FONT, 14).into_font().color(&RGBColor(90, 90, 90)),
        ))?;
        y += 20;
    }
    root.present()
        .with_context(|| format!("cannot write {}", path.display()))?;
    Ok(())
}

/// Registers `font` for the charts' text; `false` (after a warning) when the file is missing.
fn register_font(font: &Path) -> Result<bool> {
    let bytes = match std::fs::read(font) {
        Ok(bytes) => bytes,
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => {
            eprintln!(
                "keyward-bench: warning: no font file at {}: charts not drawn (install \
                 fonts-dejavu-core, or pass --font FILE with a TrueType font)",
                font.display()
            );
            return Ok(false);
        }
        Err(error) => {
            return Err(error).with_context(|| format!("cannot read the font {}", font.display()));
        }
    };
    // plotters keeps the font for the whole process.
    let bytes: &'static [u8] = Box::leak(bytes.into_boxed_slice());
    plotters::style::register_font(FONT, FontStyle::Normal, bytes)
        .map_err(|_| anyhow!("{} is not a TrueType font plotters can use", font.display()))?;
    Ok(true)
}

/// `keyward-bench chart`
pub fn run(args: ChartArgs) -> Result<()> {
    let files = documents(&args.input)?;
    let charts = collect(&files)?;
    if charts.is_empty() {
        bail!(
            "no latency, pkcs11 or cloud results in {}",
            args.input
                .iter()
                .map(|p| p.display().to_string())
                .collect::<Vec<_>>()
                .join(", ")
        );
    }
    if !register_font(&args.font)? {
        return Ok(());
    }
    std::fs::create_dir_all(&args.output)
        .with_context(|| format!("cannot create {}", args.output.display()))?;
    for (family, chart) in &charts {
        let path = args.output.join(family.file_name());
        draw(*family, chart, &path).with_context(|| format!("drawing {}", path.display()))?;
        println!("{}", path.display());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn row(key: &str, path: &str, label: &str, clients: u64, per_second: f64) -> Value {
        json!({"key_spec": key, "path": path, "label": label, "clients": clients,
               "signs_per_sec": per_second})
    }

    fn write(dir: &Path, name: &str, document: &Value) -> PathBuf {
        let path = dir.join(name);
        std::fs::write(&path, document.to_string()).unwrap();
        path
    }

    #[test]
    fn families_series_and_duplicates() {
        let dir = tempfile::tempdir().unwrap();
        write(
            dir.path(),
            "latency.json",
            &json!({"benchmark": "latency", "cpus": 2, "results": [
                row("ed25519", "agent", "keyward local", 16, 10000.0),
                row("ed25519", "agent", "keyward local", 1, 3700.0),
                row("ed25519", "in-process", "in-process OpenSSL", 1, 24000.0),
                row("rsa-2048", "ssh-agent", "OpenSSH ssh-agent", 1, 1400.0),
                row("rsa-2048", "agent", "keyward local", 1, 1900.0),
            ]}),
        );
        write(
            dir.path(),
            "isolation.json",
            &json!({"benchmark": "latency", "cpus": 2, "results": [
                row("ed25519", "in-process", "in-process OpenSSL", 1, 19000.0),
            ]}),
        );
        write(
            dir.path(),
            "startup.json",
            &json!({"benchmark": "startup", "load": {}}),
        );
        write(
            dir.path(),
            "pkcs11.json",
            &json!({"benchmark": "pkcs11", "results": [
                row("ec-p256", "cryptoki, kept session", "cryptoki, kept session", 1, 15000.0),
            ]}),
        );
        let charts = collect(&documents(&[dir.path().to_path_buf()]).unwrap()).unwrap();
        assert_eq!(
            charts.iter().map(|(f, _)| *f).collect::<Vec<_>>(),
            [Family::Local, Family::Pkcs11]
        );
        let local = &charts[0].1;
        let names: Vec<String> = local.series.iter().map(Series::name).collect();
        assert_eq!(
            names,
            [
                "ed25519: keyward local",
                "ed25519: in-process OpenSSL",
                "rsa-2048: keyward local",
                "rsa-2048: OpenSSH ssh-agent",
            ]
        );
        assert_eq!(local.series[0].points, [(1, 3700.0), (16, 10000.0)]);
        assert!(local.series[0].keyward && !local.series[1].keyward);
        // Measured in both documents: the higher throughput.
        assert_eq!(local.series[1].points, [(1, 24000.0)]);
        assert_eq!(local.clients(), [1, 16]);
        assert_eq!(local.sources.len(), 2);
    }

    #[test]
    fn ticks() {
        assert_eq!(
            throughput_ticks(150.0, 60000.0),
            [
                200.0, 500.0, 1000.0, 2000.0, 5000.0, 10000.0, 20000.0, 50000.0
            ]
        );
    }

    #[test]
    fn missing_font_skips_the_charts() {
        let dir = tempfile::tempdir().unwrap();
        let input = write(
            dir.path(),
            "cloud.json",
            &json!({"benchmark": "cloud", "results": [
                row("ec-p256", "direct", "reqwest → OpenBao transit", 1, 2000.0),
            ]}),
        );
        let output = dir.path().join("charts");
        run(ChartArgs {
            input: vec![input],
            output: output.clone(),
            font: dir.path().join("no-such-font.ttf"),
        })
        .unwrap();
        assert!(!output.exists());
    }

    #[test]
    fn draws_with_the_system_font() {
        if !Path::new(DEFAULT_FONT).exists() {
            // scripts/test installs fonts-dejavu-core for the unit part; CI must not skip.
            let strict = std::env::var("CI").is_ok_and(|v| v == "true")
                || std::env::var_os("KEYWARD_NO_SKIP").is_some();
            assert!(!strict, "no {DEFAULT_FONT}: apt install fonts-dejavu-core");
            eprintln!("skipped: no {DEFAULT_FONT} (apt install fonts-dejavu-core)");
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        let input = write(
            dir.path(),
            "cloud.json",
            &json!({"benchmark": "cloud", "cpus": 2, "results": [
                row("ec-p256", "direct", "reqwest → OpenBao transit", 1, 2000.0),
                row("ec-p256", "direct", "reqwest → OpenBao transit", 16, 4000.0),
                row("ec-p256", "agent", "keyward vault → OpenBao", 1, 1400.0),
                row("ec-p256", "agent", "keyward vault → OpenBao", 16, 2400.0),
            ]}),
        );
        let output = dir.path().join("charts");
        run(ChartArgs {
            input: vec![input],
            output: output.clone(),
            font: DEFAULT_FONT.into(),
        })
        .unwrap();
        let png = std::fs::read(output.join("cloud.png")).unwrap();
        assert!(png.starts_with(b"\x89PNG"));
    }
}
