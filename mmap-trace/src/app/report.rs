//! `mmap-trace report TRACE`: the report of a trace file.

use super::{
    cli::ReportArgs,
    output::{Failure, Output, render},
};
use crate::{account::Thresholds, report, trace};

pub fn run(args: ReportArgs) -> Result<i32, Failure> {
    let patterns = report::patterns::load(&args.patterns)?;
    let mut output = Output::open(args.output.as_deref())?;
    let recording = trace::replay(&args.trace)?;
    let report = report::build(&recording, &patterns, Thresholds::default());
    output.write(&render(&report, args.format, args.top))?;
    Ok(0)
}
