//! Test kit: the ESC/POS printer simulator, the harness that starts the real binaries, and
//! webhook signing. Used by the integration tests, the demo and the load generator.

pub mod cli;
pub mod fake_wix;
pub mod harness;
pub mod observability;
pub mod sim;
pub mod webhook;
