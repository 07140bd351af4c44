//! The build context: a directory seen through `.dockerignore`.
pub mod ignore;
