"""Device interfaces, real drivers, simulated twins and the virtual bench they share."""
