pub const PRELUDE: &str = "";
