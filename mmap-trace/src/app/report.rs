//! `mmap-trace report TRACE`: the report of a trace file.

use super::{
    cli::{EXIT_GROWTH, ReportArgs},
    output::{Failure, Output, render},
};
use crate::{report, trace};

pub fn run(args: ReportArgs) -> Result<i32, Failure> {
    let patterns = report::patterns::load(&args.patterns)?;
    let mut output = Output::open(args.output.as_deref(), args.format)?;
    let recording = trace::replay(&args.trace)?;
    let report = report::build(&recording, &patterns, &args.verdict.judging());
    output.write(&render(&report, args.format, args.top, args.weight)?)?;
    Ok(if args.verdict.fail_on_growth && report.any_flagged() {
        EXIT_GROWTH
    } else {
        0
    })
}
