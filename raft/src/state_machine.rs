//! placeholder
/// placeholder
#[derive(Debug)]
pub struct StateMachine {}
/// placeholder
#[derive(Debug)]
pub struct StateMachineReader {}
