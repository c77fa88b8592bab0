//! anamo: a reconciliation operator for EC2 fleets working through a task pool.
//!
//! Layout: [`model`] and [`store`] hold the task model and the fenced lease protocol;
//! [`worker`] is the agent on each instance; [`manifest`], [`planner`] and [`provider`] make up
//! the controller; [`cli`] is the command line.

pub mod aws_client;
pub mod bench;
pub mod cli;
pub mod clock;
pub mod controller;
pub mod cost;
pub mod import;
pub mod logs;
pub mod manifest;
pub mod metrics;
pub mod model;
pub mod pipeline;
pub mod planner;
pub mod provider;
pub mod server;
pub mod sim;
pub mod store;
pub mod telemetry;
pub mod text;
pub mod worker;
