"""Privacy mechanisms: managed keys, pseudonymization treatments, and (later) retention and DP."""
