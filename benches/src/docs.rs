//! `docs/benchmarks.md`: each benchmark rewrites its own section, between
//! `<!-- bench:NAME -->` and `<!-- /bench:NAME -->`, and leaves the others.

use std::path::PathBuf;

const HEADER: &str = "# Benchmarks\n\n\
    Figures measured side by side in one run on one machine; they move with the machine's load, so \
    compare the ratios, not the absolute numbers, across runs.\n";

/// Replaces (or appends) the section `name` of `docs/benchmarks.md`.
pub fn write_section(name: &str, body: &str) -> std::io::Result<PathBuf> {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../docs/benchmarks.md");
    let doc = std::fs::read_to_string(&path).unwrap_or_else(|_| HEADER.to_owned());
    let (open, close) = (
        format!("<!-- bench:{name} -->"),
        format!("<!-- /bench:{name} -->"),
    );
    let block = format!("{open}\n{body}{close}\n");
    let updated = match (doc.find(&open), doc.find(&close)) {
        (Some(start), Some(end)) if end > start => {
            format!(
                "{}{block}{}",
                &doc[..start],
                doc[end + close.len()..].trim_start_matches('\n')
            )
        }
        _ => format!("{}\n{block}", doc.trim_end()),
    };
    std::fs::write(&path, updated)?;
    Ok(path)
}
