//! `.dockerignore` patterns with Docker's matcher semantics.
