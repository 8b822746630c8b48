"""``make soak``: the whole task lifecycle under a schedule of faults.

Agents submit, claim, record steps, ask for approval and complete through
``ledger.client``; an officer approves or rejects; an auditor verifies,
saves checkpoints and exports; meanwhile the schedule kills the API, the
projection runner and the tree builder with SIGKILL, stops and crashes
PostgreSQL, ends every database session, and cuts connections mid-request.
At the end it checks that nothing acknowledged was lost or applied twice,
no task was claimed twice or left stranded, and that the chain, the signed
checkpoints and the views verify; it prints the recovery times per fault and
what the clients saw during each outage.
"""
