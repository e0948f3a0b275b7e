//! Pictures: folded stacks, flame graphs, the HTML report, pprof.
