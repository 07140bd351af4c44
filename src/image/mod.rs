//! Image types shared by the planner, the solver and the exporters.
pub mod reference;
