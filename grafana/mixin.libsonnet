// viber-exporter's monitoring mixin: alerts, recording rules and dashboards.
//   jsonnet -J vendor -e '(import "mixin.libsonnet").prometheusAlerts'
(import 'mixin/config.libsonnet') +
(import 'mixin/alerts.libsonnet') +
(import 'mixin/rules.libsonnet') +
(import 'mixin/dashboards.libsonnet')
