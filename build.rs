//! Embeds the hosted tools' definitions (`tools/hosted/*.json`, one file per tool) in the
//! binary: adding a tool is adding a file.

use std::fmt::Write;

fn main() {
    let dir = std::path::Path::new("tools/hosted");
    println!("cargo:rerun-if-changed={}", dir.display());
    let mut files: Vec<_> = std::fs::read_dir(dir)
        .expect("tools/hosted exists")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|e| e == "json"))
        .collect();
    files.sort();
    let mut out = String::from("&[\n");
    for f in files {
        let abs = std::fs::canonicalize(&f).expect("a tool file");
        println!("cargo:rerun-if-changed={}", f.display());
        let _ = writeln!(out, "    include_str!({:?}),", abs.display().to_string());
    }
    out.push(']');
    let dest =
        std::path::Path::new(&std::env::var("OUT_DIR").expect("OUT_DIR")).join("hosted_tools.rs");
    std::fs::write(dest, out).expect("writing hosted_tools.rs");
}
