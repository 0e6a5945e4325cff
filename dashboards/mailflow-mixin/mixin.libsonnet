// mailflow-exporter monitoring mixin: prometheusAlerts, prometheusRules and grafanaDashboards from _config.
// Usage and the _config fields: the "Monitoring mixin" section of the repository's README.md.
(import 'alerts/alerts.libsonnet') +
(import 'rules/rules.libsonnet') +
(import 'dashboards/dashboards.libsonnet') +
(import 'config.libsonnet')
