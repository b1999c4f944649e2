//! One module per kernel file, and the harness's own checks.

mod attention;
mod harness;
mod rotary;
mod rows;
mod support;
