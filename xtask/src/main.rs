//! Project tasks: `cargo xtask <task>`.
//!
//! setup  install what building and testing need (idempotent, quick when done)
//! demo   run mmap-trace on the bundled lab and show its report
//! test   every test: unit tests and the privileged end-to-end tests (root);
//!        with --vm KERNEL, the end-to-end tests on that kernel under QEMU
//! lint   rustfmt and clippy (-D warnings) on the user-space and eBPF crates
//! bench  the cost of tracing, against the untraced workload and peers
//! soak   mmap-trace on a busy workload for minutes: flat memory, nothing lost

mod bench;
mod cmd;
mod demo;
mod lint;
mod setup;
mod soak;
mod test;
mod vm;

use std::process::ExitCode;

const USAGE: &str = "usage: cargo xtask <setup|demo|test|lint|bench>

  setup   install the prerequisites: Debian packages (gcc, UCX), the nightly
          rust-src component and bpf-linker; quick when already present
  demo    build mmap-trace and the bundled lab, trace the lab, print the report
  test    run every test, unit and end-to-end (needs root); arguments go to
          cargo test
  test --vm KERNEL [-- FILTER...]
          only the end-to-end tests, on a Debian kernel booted under QEMU
          (TCG; the first run downloads it into target/vm): 6.1 (Debian 12)
          or 6.12 (bookworm's newer one), about 19 min for the whole suite;
          5.10 (Debian 11) is older than mmap-trace supports (5.17), and
          checks that mmap-trace refuses it in one line
  lint    cargo fmt --check and clippy -D warnings, user-space and eBPF crates
  bench   [--pairs N] [--rounds N]: ns per mmap+munmap pair untraced, under
          mmap-trace (fp, dwarf, auto), bpftrace and perf record; with
          mprotect/madvise; from Python; a residency sample; trace bytes an
          event; 8 threads racing with the default buffer (needs root)
  soak    [--minutes N]: trace the bench workload for N minutes (default 5):
          the tracer's RSS slope, lost records, live report = replay (root)";

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let result = match args.first().map(String::as_str) {
        Some("setup") => setup::run(),
        Some("demo") => demo::run(&args[1..]),
        Some("test") => test::run(&args[1..]),
        Some("lint") => lint::run(),
        Some("bench") => bench::run(&args[1..]),
        Some("soak") => soak::run(&args[1..]),
        Some("-h" | "--help" | "help") => {
            println!("{USAGE}");
            return ExitCode::SUCCESS;
        }
        _ => {
            eprintln!("{USAGE}");
            return ExitCode::from(2);
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("xtask: error: {error:#}");
            ExitCode::FAILURE
        }
    }
}
