//! End-to-end tests: they drive the built `runbook` binary in a temporary directory with its
//! own journal. One test target, one file per topic.

mod support;

mod beside;
mod check;
mod cli;
mod command_driver;
mod control;
mod corrupt;
mod cql;
mod disk_full;
mod drift;
mod durability;
mod etcd;
mod examples;
mod fake_kube;
mod gate_timers;
mod gates;
mod helm;
mod injection;
mod interrupt;
mod journal_integrity;
mod json_output;
mod kill_matrix;
mod kube;
mod kube_etcd;
mod kube_nats;
mod kube_openbao;
mod locks;
mod memory;
mod nats;
mod openbao;
mod openbao_secret;
mod orphans;
mod parallel;
mod rotation;
mod secret_taint;
mod secrets;
mod semantics;
mod serve;
mod sleep;
mod sql;
mod ssh;
mod step_output;
mod tty;
mod web;
