"""The scheduler: nightly refreshes and version bumps as Ray jobs, exactly one at a time, recorded in the store."""
