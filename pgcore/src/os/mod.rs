//! The few operating-system helpers several programs need: processes as
//! /proc shows them and process groups ([`process`]), users ([`user`]), and
//! files replaced whole ([`mod@file`]).

pub mod file;
pub mod process;
pub mod user;

pub use file::{sync_dir, write_atomically};
pub use process::{alive_named, children_of, kill_group, process_info, stop_group};
pub use user::{running_as_root, User};
