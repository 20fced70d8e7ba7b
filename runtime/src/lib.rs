//! The recipe runtime: candle models, data, stage executors, curricula, optimisers and run
//! artifacts. It executes the typed program that `recipe-compiler` produces.

pub mod rng;
