//! What the YAML fuzz targets (`dataset-ctl apply -f`, deployment specs)
//! share, included with `#[path]` next to `mutator.rs`: the syntax worth
//! splicing into documents, and what an error must look like.

/// Longest error line accepted, in characters.
pub const MAX_ERROR: usize = 300;

/// YAML (and JSON) syntax worth splicing into documents: document and
/// flow markers, anchors and merges, tags, quoting, block scalars, a BOM,
/// and numbers past every integer and float range.
const SYNTAX: &[&[u8]] = &[
    b"---\n",
    b"...\n",
    b"\n- ",
    b": ",
    b"{",
    b"}",
    b"[",
    b"]",
    b", ",
    b"&a ",
    b"*a",
    b"<<: *a\n",
    b"!!binary ",
    b"!!str ",
    b"~",
    b"null",
    b"'",
    b"\"",
    b"\\u0000",
    b"# c\n",
    b"|\n  ",
    b">-\n  ",
    b"? ",
    b"\t",
    b"%YAML 1.2\n",
    b"1e400",
    b".nan",
    b"-.inf",
    b"-9223372036854775809",
    b"18446744073709551616",
    b"\xef\xbb\xbf",
];

/// The mutator's dictionary for a target: [`SYNTAX`] and the target's own
/// fields and values.
pub fn dict(fields: &[&'static [u8]]) -> &'static [&'static [u8]] {
    let all: Vec<&'static [u8]> = SYNTAX
        .iter()
        .copied()
        .chain(fields.iter().copied())
        .collect();
    Box::leak(all.into_boxed_slice())
}

/// `Ok` when an error reads as one line an operator can take in (not a
/// dump of the input).
pub fn one_short_line(line: &str) -> Result<(), String> {
    let n = line.chars().count();
    if line.contains('\n') {
        Err(format!("error spans lines: {line:?}"))
    } else if n > MAX_ERROR {
        Err(format!("{n}-character error: {line:?}"))
    } else {
        Ok(())
    }
}
