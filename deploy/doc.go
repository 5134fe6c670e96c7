// Package deploy holds kbackup's deployment artifacts and their tests: the
// Helm chart (helm/kbackup), the alert rules (prometheus), the Grafana
// dashboard (grafana), the image builder (image) and the documented values
// file (examples). The tests lint and render the chart with the real helm and
// decode every object strictly (internal/chartcheck), run promtool's rule unit
// tests, and check that the dashboard and the rules use only metrics a real
// archiver exports. They need helm and promtool (testenv/install.sh helm
// promtool); without them they skip, or fail when KBACKUP_TEST_REQUIRE names
// them (make deploy-check does). deploy/README.md describes the chart.
package deploy
