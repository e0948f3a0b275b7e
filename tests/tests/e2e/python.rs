//! Python frames in the stacks of CPython processes (issue: stacks as users read them).
