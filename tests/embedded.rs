//! The same end-to-end tests of the task path, the scheduler, projections,
//! delayed messages, gRPC deliveries, limits and live policy, pull consumers and every kind's consumers (fixed and randomized scenarios),
//! against the embedded store: this binary's name tells the harness which
//! store to start (see `support::embedded`). Tests of what only PostgreSQL
//! does say so and return.

// Each file declares `mod support;` to build on its own as well; here that
// makes one copy of the harness per file, which is what we want.
#![allow(clippy::duplicate_mod)]

#[path = "consumers.rs"]
mod consumers;
#[path = "delayed.rs"]
mod delayed;
#[path = "grpc.rs"]
mod grpc;
#[path = "limits.rs"]
mod limits;
#[path = "pull.rs"]
mod pull;
#[path = "restart.rs"]
mod restart;
#[path = "stress.rs"]
mod stress;
#[path = "tasks.rs"]
mod tasks;
#[path = "topics.rs"]
mod topics;
