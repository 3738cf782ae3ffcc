"""``pesigitg-ctl``: the operator's client of the status socket, and offline file tools."""
