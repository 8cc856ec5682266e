"""The control plane's monitoring stack (issue 12 item 3): Debian's Prometheus and Alertmanager run
by opencs, their configuration rendered from what the store says (clusters to scrape, the scaling
alert rules users attach to services)."""
