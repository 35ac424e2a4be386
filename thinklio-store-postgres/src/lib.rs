//! The PostgreSQL store of Thinklio. It does not exist yet: this crate holds
//! its place in the workspace. Until it lands, use `thinklio-store-sqlite`.
