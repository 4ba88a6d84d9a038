//! Every transition of the run state machine, on fixed times.
