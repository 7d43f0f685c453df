//! A PE file for Authenticode tests: there is none in Debian to rely on, so it is built here.

/// A minimal valid PE32 executable (one `.text` section holding `ret`), for Authenticode:
/// DOS header, `PE\0\0`, COFF header, optional header with 16 empty data directories, one
/// section header, headers and section each padded to the 0x200 file alignment.
pub fn tiny_pe() -> Vec<u8> {
    fn u16le(out: &mut Vec<u8>, v: u16) {
        out.extend(v.to_le_bytes());
    }
    fn u32le(out: &mut Vec<u8>, v: u32) {
        out.extend(v.to_le_bytes());
    }
    let mut pe = vec![0u8; 0x40];
    pe[..2].copy_from_slice(b"MZ");
    pe[0x3c..0x40].copy_from_slice(&0x40u32.to_le_bytes()); // e_lfanew
    pe.extend(b"PE\0\0");
    // COFF: i386, 1 section, no symbols, 224-byte optional header, executable + 32-bit.
    for v in [0x14c, 1] {
        u16le(&mut pe, v);
    }
    for v in [0, 0, 0] {
        u32le(&mut pe, v);
    }
    u16le(&mut pe, 224);
    u16le(&mut pe, 0x0102);
    // Optional header (PE32).
    u16le(&mut pe, 0x10b);
    pe.extend([14, 0]); // linker version
    // code size, initialized, uninitialized, entry point, base of code, base of data, image
    // base, section alignment, file alignment
    for v in [
        0x200, 0, 0, 0x1000, 0x1000, 0x1000, 0x40_0000, 0x1000, 0x200,
    ] {
        u32le(&mut pe, v);
    }
    for v in [6, 0, 0, 0, 6, 0] {
        u16le(&mut pe, v); // OS, image and subsystem versions
    }
    // Win32 version, image size, headers size, checksum
    for v in [0, 0x2000, 0x200, 0] {
        u32le(&mut pe, v);
    }
    u16le(&mut pe, 3); // console subsystem
    u16le(&mut pe, 0x8140); // NX compatible, dynamic base, terminal server aware
    // stack reserve/commit, heap reserve/commit, loader flags, 16 data directories
    for v in [0x10_0000, 0x1000, 0x10_0000, 0x1000, 0, 16] {
        u32le(&mut pe, v);
    }
    pe.extend([0u8; 16 * 8]);
    // Section header: .text, virtual size 1 at 0x1000, 0x200 raw bytes at 0x200, code|exec|read.
    pe.extend(b".text\0\0\0");
    for v in [1, 0x1000, 0x200, 0x200, 0, 0] {
        u32le(&mut pe, v);
    }
    u16le(&mut pe, 0);
    u16le(&mut pe, 0);
    u32le(&mut pe, 0x6000_0020);
    pe.resize(0x200, 0);
    pe.push(0xc3); // ret
    pe.resize(0x400, 0);
    pe
}
