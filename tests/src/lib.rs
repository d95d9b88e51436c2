//! Test harness for the integration tests in `tests/tests/`: the shared test
//! kit (`testkit/`, crate `ftpd-testkit`) under the names the tests import
//! (`ftpd_tests::Server`, `Ftp`, `free_port`, `random_file`, ...). The kit
//! is shared with the benchmark (`cargo xtask bench`); see its crate
//! documentation for the layout.

pub use ftpd_testkit::*;
