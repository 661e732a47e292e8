//! End-to-end tests: a real server on a loopback socket, real clients, the real store.
//!
//! One test binary (ripgrep's layout), one module per area. `support` starts servers
//! in-process on port 0 (mini-redis) or as the real `intake` binary when a test needs to
//! kill or measure the process.

mod http;
mod submit;
mod support;

mod access;
mod admin;
mod api;
mod auth;
mod clamav;
mod cli;
mod cluster;
mod crash;
mod deployments;
mod deployments_directory;
mod directory;
mod hostile;
mod http_flood;
mod lettre_client;
mod limits;
mod listeners;
mod mailpit;
mod mysql;
mod ops;
mod outage_log;
mod policy;
mod postgres;
mod proxy;
mod redis_store;
mod relay;
mod reload;
mod restart;
mod scaleout;
mod shutdown;
mod smuggling;
mod spf_at_mail;
mod store_away;
mod tls;
mod transcripts;
