//! Where the bytes go: symbol sizes from `nm --print-size` on the unstripped
//! link, attributed to the crate that defines each symbol.
//!
//! Attribution works on demangled names the way cargo-bloat does: the first
//! path segment names the crate; for `<T as Trait>::f` the crate of `T`
//! (monomorphised generics land in the crate of their type, which is where a
//! reader would look to shrink them). C and assembly symbols (ring's
//! `ring_core_*`, musl/glibc, compiler-rt) are grouped by a known prefix or as
//! `[C]`. Bytes in no symbol (string literals, ELF headers, unwind tables,
//! padding) appear as the gap between the stripped size and the symbol sum.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;

use crate::build::{output, BuildError};

/// One symbol with its size.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Symbol {
    /// Demangled name without the hash.
    pub name: String,
    /// Bytes.
    pub bytes: u64,
    /// Crate (or `[C]`, `std`) it was attributed to.
    #[serde(rename = "crate")]
    pub krate: String,
}

impl Symbol {
    /// A symbol from its mangled name: demangled without the hash, and
    /// attributed to its crate.
    fn new(raw: &str, bytes: u64) -> Symbol {
        let name = format!("{:#}", rustc_demangle::demangle(raw));
        let krate = crate_of(&name);
        Symbol { name, bytes, krate }
    }
}

/// Whether `binary` is a Mach-O (macOS boards) rather than an ELF file.
fn is_macho(binary: &Path) -> Result<bool, BuildError> {
    use std::io::Read;
    let mut magic = [0u8; 4];
    std::fs::File::open(binary)
        .and_then(|mut f| f.read_exact(&mut magic))
        .map_err(|e| BuildError::Io(binary.to_owned(), e))?;
    // MH_MAGIC_64 / MH_CIGAM_64 and the universal (fat) header.
    Ok(matches!(
        magic,
        [0xcf, 0xfa, 0xed, 0xfe] | [0xfe, 0xed, 0xfa, 0xcf] | [0xca, 0xfe, 0xba, 0xbe]
    ))
}

/// Runs `nm` on an unstripped binary and returns its sized symbols.
pub fn read(binary: &Path) -> Result<Vec<Symbol>, BuildError> {
    if is_macho(binary)? {
        // binutils cannot read arm64 Mach-O, and Mach-O symbols carry no size:
        // LLVM's nm lists them by address and a symbol's size is the distance
        // to the next one (what cargo-bloat does for Mach-O).
        let mut cmd = Command::new("llvm-nm");
        cmd.args(["--numeric-sort", "--defined-only", "--radix=d"])
            .arg(binary);
        let text = output(cmd, "llvm-nm")?;
        let mut cmd = Command::new("llvm-objdump");
        cmd.arg("--section-headers").arg(binary);
        let ranges = parse_section_ranges(&output(cmd, "llvm-objdump")?);
        return Ok(parse_nm_by_address(&text, &ranges));
    }
    let mut cmd = Command::new("nm");
    cmd.args(["--print-size", "--size-sort", "--radix=d"])
        .arg(binary);
    let text = output(cmd, "nm")?;
    Ok(parse_nm(&text))
}

/// Address ranges `[start, end)` of the sections in `llvm-objdump
/// --section-headers` output (`Idx Name Size VMA Type`, hexadecimal).
pub fn parse_section_ranges(text: &str) -> Vec<(u64, u64)> {
    let mut out = Vec::new();
    for line in text.lines() {
        let f: Vec<&str> = line.split_whitespace().collect();
        if f.len() < 4 || f[0].parse::<u32>().is_err() {
            continue;
        }
        if let (Ok(size), Ok(vma)) = (u64::from_str_radix(f[2], 16), u64::from_str_radix(f[3], 16))
        {
            out.push((vma, vma.saturating_add(size)));
        }
    }
    out
}

/// Parses `llvm-nm --numeric-sort --radix=d` lines of a Mach-O, `<addr> <type>
/// <name>`, sizing each code or data symbol up to the next symbol's address but
/// never past the end of its own section (`sections`, from
/// [`parse_section_ranges`]): a symbol in no section is left out, and the
/// last symbol of a section (padding included) runs to the section's end.
pub fn parse_nm_by_address(text: &str, sections: &[(u64, u64)]) -> Vec<Symbol> {
    let mut rows: Vec<(u64, &str, &str)> = Vec::new();
    for line in text.lines() {
        let mut it = line.splitn(3, ' ');
        let (Some(addr), Some(kind), Some(raw)) = (it.next(), it.next(), it.next()) else {
            continue;
        };
        if let Ok(a) = addr.parse::<u64>() {
            rows.push((a, kind, raw));
        }
    }
    let mut out = Vec::new();
    for (i, &(addr, kind, raw)) in rows.iter().enumerate() {
        if !matches!(kind, "t" | "T" | "s" | "S" | "d" | "D") {
            continue;
        }
        let Some(&(_, section_end)) = sections.iter().find(|(a, b)| *a <= addr && addr < *b) else {
            continue;
        };
        let next = rows[i + 1..]
            .iter()
            .map(|r| r.0)
            .find(|&a| a > addr)
            .unwrap_or(section_end);
        let end = next.min(section_end);
        // Mach-O prefixes every C-level name with an underscore.
        out.push(Symbol::new(
            raw.strip_prefix('_').unwrap_or(raw),
            end - addr,
        ));
    }
    out
}

/// Parses `nm --print-size --radix=d` lines: `<addr> <size> <type> <name>`.
pub fn parse_nm(text: &str) -> Vec<Symbol> {
    let mut out = Vec::new();
    for line in text.lines() {
        let mut it = line.splitn(4, ' ');
        let (Some(_addr), Some(size), Some(kind), Some(raw)) =
            (it.next(), it.next(), it.next(), it.next())
        else {
            continue;
        };
        // Only bytes that occupy the file: code, read-only and initialised data.
        if !matches!(
            kind,
            "t" | "T" | "r" | "R" | "d" | "D" | "W" | "w" | "V" | "v"
        ) {
            continue;
        }
        let Ok(bytes) = size.parse::<u64>() else {
            continue;
        };
        out.push(Symbol::new(raw, bytes));
    }
    out
}

/// The crate a demangled symbol belongs to.
pub fn crate_of(name: &str) -> String {
    let mut s = name.trim_start();
    // `<T as Trait>::f`, `<&mut T as ..>`, `<[T] as ..>`, `<(A, B) as ..>`, `<dyn T as ..>`
    loop {
        let before = s;
        for p in [
            "<", "&", "mut ", "*const ", "*mut ", "[", "(", "dyn ", "impl ",
        ] {
            if let Some(rest) = s.strip_prefix(p) {
                s = rest;
            }
        }
        if s == before {
            break;
        }
    }
    // `<u32 as core::fmt::Display>::fmt`: a primitive self type; the trait's crate.
    if let (Some(j), Some(i)) = (s.find(" as "), s.find("::")) {
        if j < i {
            return crate_of(&s[j + 4..]);
        }
    }
    match s.find("::") {
        Some(i) if i > 0 && s[..i].chars().all(|c| c.is_alphanumeric() || c == '_') => {
            let k = &s[..i];
            match k {
                "core" | "alloc" | "std" | "std_detect" | "hashbrown" | "compiler_builtins"
                | "rustc_demangle" | "addr2line" | "gimli" | "miniz_oxide" | "panic_abort"
                | "panic_unwind" => "std".to_owned(),
                _ => k.to_owned(),
            }
        }
        _ if s.starts_with("ring_core_") || s.starts_with("GFp_") => "ring".to_owned(),
        _ => "[C]".to_owned(),
    }
}

/// Sum of symbol bytes per crate, largest first.
pub fn by_crate(symbols: &[Symbol]) -> Vec<(String, u64)> {
    let mut sums: BTreeMap<&str, u64> = BTreeMap::new();
    for s in symbols {
        *sums.entry(&s.krate).or_default() += s.bytes;
    }
    let mut v: Vec<(String, u64)> = sums.into_iter().map(|(k, b)| (k.to_owned(), b)).collect();
    v.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
    v
}

/// The `n` largest symbols.
pub fn largest(symbols: &[Symbol], n: usize) -> Vec<Symbol> {
    let mut v = symbols.to_vec();
    v.sort_by(|a, b| b.bytes.cmp(&a.bytes).then_with(|| a.name.cmp(&b.name)));
    v.truncate(n);
    v
}

/// Section sizes (`size -A`) of the allocated sections that are stored in the file.
pub fn sections(binary: &Path) -> Result<Vec<(String, u64)>, BuildError> {
    let mut v = if is_macho(binary)? {
        let mut cmd = Command::new("llvm-size");
        cmd.arg("-m").arg(binary);
        parse_macho_sections(&output(cmd, "llvm-size")?)
    } else {
        let mut cmd = Command::new("size");
        cmd.args(["-A", "-d"]).arg(binary);
        parse_elf_sections(&output(cmd, "size")?)
    };
    v.sort_by_key(|s| std::cmp::Reverse(s.1));
    Ok(v)
}

/// `size -A -d` lines `<name> <size> <addr>`: the ELF sections the file stores.
fn parse_elf_sections(text: &str) -> Vec<(String, u64)> {
    let mut v = Vec::new();
    for line in text.lines() {
        let mut it = line.split_whitespace();
        if let (Some(name), Some(size)) = (it.next(), it.next()) {
            if name.starts_with('.')
                && name != ".bss"
                && name != ".tbss"
                && !name.starts_with(".comment")
            {
                if let Ok(n) = size.parse::<u64>() {
                    if n > 0 {
                        v.push((name.to_owned(), n));
                    }
                }
            }
        }
    }
    v
}

/// `llvm-size -m` output (`Segment __TEXT: n` then `\tSection __text: n` lines):
/// `__TEXT,__text`-style names, since Mach-O reuses section names across
/// segments (`__const` is in both `__TEXT` and `__DATA`); zero-fill sections
/// take no file bytes and are left out.
fn parse_macho_sections(text: &str) -> Vec<(String, u64)> {
    let mut v = Vec::new();
    let mut segment = "";
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("Segment ") {
            segment = rest.split(':').next().unwrap_or("");
        } else if let Some(rest) = line.trim_start().strip_prefix("Section ") {
            let mut it = rest.splitn(2, ": ");
            if let (Some(name), Some(size)) = (it.next(), it.next()) {
                let zero_fill = matches!(name, "__bss" | "__common" | "__thread_bss");
                if let Ok(n) = size.trim().parse::<u64>() {
                    if n > 0 && !zero_fill {
                        v.push((format!("{segment},{name}"), n));
                    }
                }
            }
        }
    }
    v
}

/// The newest `GLIBC_x.y` symbol version a dynamic binary asks for: the oldest
/// glibc it runs on. `None` for static binaries.
pub fn min_glibc(bytes: &[u8]) -> Option<String> {
    let needle = b"GLIBC_";
    let mut best: Option<(Vec<u32>, String)> = None;
    let mut i = 0;
    while let Some(pos) = bytes[i..].windows(needle.len()).position(|w| w == needle) {
        let start = i + pos + needle.len();
        let end = bytes[start..]
            .iter()
            .position(|c| !(c.is_ascii_digit() || *c == b'.'))
            .map_or(bytes.len(), |e| start + e);
        if let Ok(v) = std::str::from_utf8(&bytes[start..end]) {
            let parts: Option<Vec<u32>> = v.split('.').map(|p| p.parse().ok()).collect();
            if let Some(parts) = parts {
                if best.as_ref().is_none_or(|(b, _)| parts > *b) {
                    best = Some((parts, v.to_owned()));
                }
            }
        }
        i = end.max(start);
    }
    best.map(|(_, v)| v)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crates_from_demangled_names() {
        let cases = [
            ("quinn_proto::connection::Connection::poll", "quinn_proto"),
            ("<quinn_proto::frame::Frame as core::fmt::Debug>::fmt", "quinn_proto"),
            ("<&mut serde_json_core::de::Deserializer as serde::de::Deserializer>::deserialize_str", "serde_json_core"),
            ("<[u8] as core::fmt::Debug>::fmt", "std"),
            ("<u32 as core::fmt::Display>::fmt", "std"),
            ("core::fmt::write", "std"),
            ("std::io::stdio::_print", "std"),
            ("hashbrown::raw::RawTable<T>::reserve_rehash", "std"),
            ("ring_core_0_17_14_x25519_scalar_mult_generic_masked", "ring"),
            ("memcpy", "[C]"),
            ("flor::main", "flor"),
        ];
        for (sym, want) in cases {
            assert_eq!(crate_of(sym), want, "{sym}");
        }
    }

    #[test]
    fn nm_lines_are_parsed_and_filtered() {
        // From `nm --print-size --size-sort --radix=d` on a mipsel flor build.
        let text = "00420000 00000012 T _ZN4flor4main17h0123456789abcdefE\n\
                    00430000 00000400 B some_bss\n\
                    00440000 00000008 r .Lanon\n\
                    garbage line\n";
        let syms = parse_nm(text);
        assert_eq!(syms.len(), 2);
        assert_eq!(syms[0].name, "flor::main");
        assert_eq!(syms[0].bytes, 12);
        assert_eq!(syms[0].krate, "flor");
        assert_eq!(by_crate(&syms)[0], ("flor".to_owned(), 12));
    }

    #[test]
    fn macho_symbols_are_sized_by_the_next_address_within_their_section() {
        // From `llvm-objdump --section-headers` and `llvm-nm --numeric-sort
        // --defined-only --radix=d` on a Mach-O flor (addresses shortened).
        let sections = parse_section_ranges(
            "Sections:\n\
             Idx Name            Size     VMA              Type\n  \
             0 __text          00000100 0000000000001000 TEXT\n  \
             1 __const         00000040 0000000000002000 DATA\n",
        );
        assert_eq!(sections, [(0x1000, 0x1100), (0x2000, 0x2040)]);
        let text = "4096 T __ZN4flor4main17h0123456789abcdefE\n\
                    4196 t _ring_core_0_17_14_bn_mul_mont\n\
                    8192 S _HELLO_RETRY_REQUEST_RANDOM\n\
                    8224 s _last_const\n\
                    9000 T _outside_every_section\n\
                    12288 b _some_bss\n";
        let syms = parse_nm_by_address(text, &sections);
        let got: Vec<(&str, u64)> = syms.iter().map(|s| (s.name.as_str(), s.bytes)).collect();
        assert_eq!(
            got,
            [
                ("flor::main", 100),
                // Up to the end of __text (0x1100), not to the next symbol in __const.
                ("ring_core_0_17_14_bn_mul_mont", 0x1100 - 4196),
                ("HELLO_RETRY_REQUEST_RANDOM", 32),
                ("last_const", 0x2040 - 8224),
            ]
        );
        assert_eq!(syms[0].krate, "flor");
        assert_eq!(syms[1].krate, "ring");
    }

    #[test]
    fn macho_sections_are_named_with_their_segment() {
        let text =
            "Segment __TEXT: 1329504\n\tSection __text: 1014896\n\tSection __const: 255560\n\
                    \ttotal 1323875\nSegment __DATA: 54624\n\tSection __const: 50584\n\
                    \tSection __bss: 320\n\ttotal 54515\n";
        assert_eq!(
            parse_macho_sections(text),
            [
                ("__TEXT,__text".to_owned(), 1014896),
                ("__TEXT,__const".to_owned(), 255560),
                ("__DATA,__const".to_owned(), 50584)
            ]
        );
    }

    #[test]
    fn min_glibc_takes_the_newest_version() {
        let bytes = b"\0GLIBC_2.17\0GLIBC_2.34\0GLIBC_2.4\0GLIBC_PRIVATE\0";
        assert_eq!(min_glibc(bytes).as_deref(), Some("2.34"));
        assert_eq!(min_glibc(b"no versions"), None);
    }
}
