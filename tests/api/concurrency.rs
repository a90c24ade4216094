//! The guarantees that must hold when requests race, on two instances sharing one database.
