"""The cycle pipeline (DAG), its local run through kfp.local, compile and the recurring schedule."""
