"""`recserve eval`: record every tier's answers on real datasets, replay the policies on the trace,
check a live gateway decides as the replay does, and report accuracy vs communication."""
