"""The ISBI 2012 challenge scores: V_rand, V_info and pixel error."""
