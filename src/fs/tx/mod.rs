//! Metadata transactions: [`ctx`] (the state the meta lock serializes and
//! `Ctx`, one journaled transaction), [`steps`] (long operations cut into
//! transactions that each fit the journal) and [`recblocks`] (the record
//! blocks in DRAM: which slots are free, which blocks empty).

pub mod ctx;
pub mod recblocks;
pub mod steps;
