//! Compiles the C fixtures (and the demo lab) with gcc into OUT_DIR/fixtures.

use std::{env, path::PathBuf, process::Command};

/// (output, sources, extra flags). Programs find their libraries via $ORIGIN.
const FIXTURES: &[(&str, &[&str], &[&str])] = &[
    ("basic", &["basic.c"], &["-O0", "-fno-omit-frame-pointer"]),
    ("quick", &["quick.c"], &["-O0", "-fno-omit-frame-pointer"]),
    ("edge", &["edge.c"], &["-O0", "-fno-omit-frame-pointer"]),
    ("forker", &["forker.c"], &["-O0", "-fno-omit-frame-pointer"]),
    ("waiter", &["waiter.c"], &["-O0", "-fno-omit-frame-pointer"]),
    ("tree", &["tree.c"], &["-O0", "-fno-omit-frame-pointer"]),
    (
        "resident",
        &["resident.c"],
        &["-O0", "-fno-omit-frame-pointer"],
    ),
    ("ucx_rcache", &["ucx_rcache.c"], &["-O2", "-lucs"]),
    ("libnsmap.so", &["libnsmap.c"], &["-O2", "-fPIC", "-shared"]),
    (
        "nsfix",
        &["nsfix.c"],
        &["-O2", "-L@OUT", "-l:libnsmap.so", "-Wl,-rpath,$ORIGIN"],
    ),
    (
        "heapshm",
        &["heapshm.c"],
        &["-O0", "-fno-omit-frame-pointer"],
    ),
    ("libleak.so", &["libleak.c"], &["-O2", "-fPIC", "-shared"]),
    (
        "libbalanced.so",
        &["libbalanced.c"],
        &["-O2", "-fPIC", "-shared"],
    ),
    ("libhoard.so", &["libhoard.c"], &["-O2", "-fPIC", "-shared"]),
    (
        "growth",
        &["growth.c"],
        &[
            "-O2",
            "-L@OUT",
            "-l:libleak.so",
            "-l:libhoard.so",
            "-l:libbalanced.so",
            "-Wl,-rpath,$ORIGIN",
        ],
    ),
    (
        "reserve",
        &["reserve.c"],
        &["-O0", "-fno-omit-frame-pointer"],
    ),
    (
        "dontneed",
        &["dontneed.c"],
        &["-O0", "-fno-omit-frame-pointer"],
    ),
    ("warmup", &["warmup.c"], &["-O0", "-fno-omit-frame-pointer"]),
    ("memfd", &["memfd.c"], &["-O0", "-fno-omit-frame-pointer"]),
    (
        "ucx",
        &["ucx.c"],
        &["-O0", "-fno-omit-frame-pointer", "-ldl"],
    ),
    (
        "librawsys_fp.so",
        &["librawsys.c"],
        &["-O2", "-fno-omit-frame-pointer", "-fPIC", "-shared"],
    ),
    (
        "librawsys_nofp.so",
        &["librawsys.c"],
        &["-O2", "-fomit-frame-pointer", "-fPIC", "-shared"],
    ),
    (
        "rawsys_fp",
        &["rawsys.c"],
        &[
            "-O0",
            "-fno-omit-frame-pointer",
            "-L@OUT",
            "-l:librawsys_fp.so",
            "-Wl,-rpath,$ORIGIN",
        ],
    ),
    (
        "rawsys_nofp",
        &["rawsys.c"],
        &[
            "-O0",
            "-fno-omit-frame-pointer",
            "-L@OUT",
            "-l:librawsys_nofp.so",
            "-Wl,-rpath,$ORIGIN",
        ],
    ),
    (
        "libnofpleaf.so",
        &["libnofpleaf.c"],
        &["-O2", "-fomit-frame-pointer", "-fPIC", "-shared"],
    ),
    (
        "nofp",
        &["nofp.c"],
        &[
            "-O2",
            "-fomit-frame-pointer",
            "-L@OUT",
            "-l:libnofpleaf.so",
            "-Wl,-rpath,$ORIGIN",
        ],
    ),
    (
        "threads",
        &["threads.c"],
        &["-O2", "-fomit-frame-pointer", "-pthread"],
    ),
    (
        "libdlo.so",
        &["libdlo.c"],
        &["-O2", "-fomit-frame-pointer", "-fPIC", "-shared"],
    ),
    (
        "dlopener",
        &["dlopener.c"],
        &["-O2", "-fomit-frame-pointer", "-ldl"],
    ),
    (
        "workload",
        &["@BENCH/workload.c"],
        &["-O2", "-fomit-frame-pointer"],
    ),
    (
        "liblab.so",
        &["@LAB/liblab.c"],
        &["-O2", "-fPIC", "-shared"],
    ),
    (
        "lab",
        &["@LAB/lab.c"],
        &["-O2", "-L@OUT", "-llab", "-Wl,-rpath,$ORIGIN"],
    ),
    // Frame pointers and no CFI (not even .debug_frame: -g0), but for one
    // object with CFI and no frame pointer.
    (
        "fpchain_cfi.o",
        &["fpchain_cfi.c"],
        &[
            "-c",
            "-O2",
            "-fomit-frame-pointer",
            "-fasynchronous-unwind-tables",
        ],
    ),
    (
        "fpchain",
        &["fpchain.c", "@OUT/fpchain_cfi.o"],
        &[
            "-O0",
            "-g0",
            "-fno-omit-frame-pointer",
            "-fno-asynchronous-unwind-tables",
        ],
    ),
    ("jit", &["jit.c"], &["-O2", "-fno-omit-frame-pointer"]),
    ("storm", &["storm.c"], &["-O2", "-fno-omit-frame-pointer"]),
    (
        "hammer",
        &["hammer.c"],
        &["-O2", "-fno-omit-frame-pointer", "-pthread"],
    ),
];

fn main() {
    let manifest = PathBuf::from(env::var_os("CARGO_MANIFEST_DIR").expect("cargo sets it"));
    let fixtures = manifest.join("fixtures");
    let lab = manifest.join("../examples/lab");
    let bench = manifest.join("../bench");
    let out = PathBuf::from(env::var_os("OUT_DIR").expect("cargo sets it")).join("fixtures");
    std::fs::create_dir_all(&out).expect("create the fixtures directory");
    println!("cargo::rerun-if-changed={}", fixtures.display());
    println!("cargo::rerun-if-changed={}", lab.display());
    println!("cargo::rerun-if-changed={}", bench.display());
    for (name, sources, flags) in FIXTURES {
        let source_path = |s: &str| {
            if let Some(file) = s.strip_prefix("@LAB/") {
                lab.join(file)
            } else if let Some(file) = s.strip_prefix("@BENCH/") {
                bench.join(file)
            } else if let Some(file) = s.strip_prefix("@OUT/") {
                out.join(file)
            } else {
                fixtures.join(s)
            }
        };
        let mut gcc = Command::new("gcc");
        gcc.arg("-g").arg("-Wall").arg("-o").arg(out.join(name));
        gcc.args(sources.iter().map(|s| source_path(s)));
        gcc.args(
            flags
                .iter()
                .map(|f| f.replace("@OUT", &out.display().to_string())),
        );
        compile(gcc, name);
    }
    println!("cargo::rustc-env=FIXTURES_DIR={}", out.display());
}

fn compile(mut gcc: Command, name: &str) {
    match gcc.status() {
        Ok(status) if status.success() => {}
        Ok(status) => panic!("gcc failed to build fixture {name} ({status}): {gcc:?}"),
        Err(e) => {
            panic!("cannot run gcc to build fixture {name} ({e}); `cargo xtask setup` installs it")
        }
    }
}
