//! The two relays in front of lowkey-vault: [`TokenShim`] for its token endpoint, and
//! [`Forward`], a plain TCP relay that gives a shared server's vault a port of its own.

use std::io::{Read, Write};
use std::net::{Ipv4Addr, Shutdown, TcpListener, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

/// A one-request-per-connection HTTP relay to lowkey-vault's token port that turns
/// `"expires_on":<number>` into `"expires_on":"<number>"` (see the module docs). When
/// lowkey-vault is down the relay closes the connection, as a stopped endpoint would.
#[derive(Debug)]
pub struct TokenShim {
    pub(super) port: u16,
    stop: Arc<AtomicBool>,
}

impl TokenShim {
    pub(super) fn start(target: u16) -> TokenShim {
        let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).expect("bind 127.0.0.1:0");
        let port = listener.local_addr().expect("local address").port();
        let stop = Arc::new(AtomicBool::new(false));
        let stopped = stop.clone();
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                if stopped.load(Ordering::SeqCst) {
                    break;
                }
                if let Ok(stream) = stream {
                    std::thread::spawn(move || {
                        let _ = relay(stream, target);
                    });
                }
            }
        });
        TokenShim { port, stop }
    }
}

impl Drop for TokenShim {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        let _ = TcpStream::connect((Ipv4Addr::LOCALHOST, self.port));
    }
}

fn relay(mut client: TcpStream, target: u16) -> std::io::Result<()> {
    client.set_read_timeout(Some(Duration::from_secs(10)))?;
    let mut head = Vec::new();
    let mut buffer = [0u8; 4096];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
        let n = client.read(&mut buffer)?;
        if n == 0 {
            return Ok(());
        }
        head.extend_from_slice(&buffer[..n]);
    }
    // The token request is a GET whose query says everything; HTTP/1.0 so that the answer is
    // not chunked and ends when the server closes.
    let text = String::from_utf8_lossy(&head).into_owned();
    let path = text.split(' ').nth(1).unwrap_or("/");
    let mut upstream = TcpStream::connect((Ipv4Addr::LOCALHOST, target))?;
    upstream.set_read_timeout(Some(Duration::from_secs(10)))?;
    write!(
        upstream,
        "GET {path} HTTP/1.0\r\nHost: 127.0.0.1:{target}\r\nMetadata: true\r\n\r\n"
    )?;
    let mut answer = Vec::new();
    upstream.read_to_end(&mut answer)?;
    let answer = String::from_utf8_lossy(&answer).into_owned();
    let (head, body) = answer.split_once("\r\n\r\n").unwrap_or((&answer, ""));
    let status = head.lines().next().unwrap_or("HTTP/1.1 502 Bad Gateway");
    let body = quote_expires_on(body);
    write!(
        client,
        "{status}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
}

/// `"expires_on":123` -> `"expires_on":"123"`; anything else unchanged.
fn quote_expires_on(body: &str) -> String {
    const FIELD: &str = "\"expires_on\":";
    let Some(start) = body.find(FIELD).map(|i| i + FIELD.len()) else {
        return body.to_string();
    };
    let digits = body[start..].bytes().take_while(u8::is_ascii_digit).count();
    if digits == 0 {
        return body.to_string();
    }
    format!(
        "{}\"{}\"{}",
        &body[..start],
        &body[start..start + digits],
        &body[start + digits..]
    )
}

/// A TCP relay from a port of its own to lowkey-vault's HTTPS port, bytes unchanged (TLS ends
/// in lowkey-vault): clients of `https://127.0.0.1:<port>` send that port in their Host header,
/// which is how lowkey-vault tells this vault from the others. Closed when dropped.
#[derive(Debug)]
pub(super) struct Forward {
    pub(super) port: u16,
    stop: Arc<AtomicBool>,
}

impl Forward {
    pub(super) fn start(target: u16) -> Forward {
        let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).expect("bind 127.0.0.1:0");
        let port = listener.local_addr().expect("local address").port();
        let stop = Arc::new(AtomicBool::new(false));
        let stopped = stop.clone();
        std::thread::spawn(move || {
            for client in listener.incoming() {
                if stopped.load(Ordering::SeqCst) {
                    break;
                }
                let Ok(client) = client else { continue };
                match TcpStream::connect((Ipv4Addr::LOCALHOST, target)) {
                    Ok(server) => pipe(client, server),
                    // The server is down: close, as a stopped server's port would.
                    Err(_) => drop(client),
                }
            }
        });
        Forward { port, stop }
    }
}

impl Drop for Forward {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        let _ = TcpStream::connect((Ipv4Addr::LOCALHOST, self.port));
    }
}

/// Copies bytes both ways between `a` and `b` until each side has closed its half.
fn pipe(a: TcpStream, b: TcpStream) {
    for (mut from, mut to) in [
        (a.try_clone(), b.try_clone()),
        (b.try_clone(), a.try_clone()),
    ]
    .into_iter()
    .filter_map(|(from, to)| Some((from.ok()?, to.ok()?)))
    {
        std::thread::spawn(move || {
            let _ = std::io::copy(&mut from, &mut to);
            let _ = to.shutdown(Shutdown::Write);
        });
    }
}
