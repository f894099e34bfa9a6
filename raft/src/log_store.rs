//! placeholder
/// placeholder
#[derive(Debug)]
pub struct LogStore {}
