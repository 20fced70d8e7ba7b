//! The recipe runtime: candle models, data, stage executors, curricula, optimisers and run
//! artifacts. It executes the typed program that `recipe-compiler` produces.

pub mod artifact;
pub mod checkpoint;
pub mod compare;
pub mod data;
pub mod exec;
pub mod model;
pub mod optim;
pub mod progress;
pub mod report;
pub mod rng;
pub mod tensorboard;
pub mod threads;
pub mod train;
