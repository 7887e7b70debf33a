"""Exit codes of `python -m train`, shared by the run's lifecycle and its loop."""
# 2 bad input; 3 ended but not completed (diverged, failed); 4 another process holds the run;
# 74 and 75 are sysexits' EX_IOERR (disk full) and EX_TEMPFAIL (preempted: run it again to resume).
EXIT_BAD_INPUT, EXIT_NOT_COMPLETED, EXIT_BUSY, EXIT_DISK_FULL, EXIT_PREEMPTED = 2, 3, 4, 74, 75
