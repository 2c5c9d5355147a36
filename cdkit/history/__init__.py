"""History, DORA metrics, the HTML report and the audit record: what cdkit recorded, shown.

One module per concern: `records` (deployments from the ledger, outcomes), `github_source`
(the same from GitHub's Deployments API), `changes` (which commits each deployment brought),
`metrics` (the four DORA keys, pure), `report` (the HTML page), `audit` (change records) and
`chain` (the ledger's tamper-evident hash chain, also used by the ledger's writes).
"""
