//! End-to-end tests: they drive the built `runbook` binary in a temporary directory with its
//! own journal. One test target, one file per topic.

mod support;

mod kill_matrix;
