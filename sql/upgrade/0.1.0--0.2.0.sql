-------------------------------------------------------------------------------
-- upgrade 0.1.0 -> 0.2.0
-- What the re-runnable install script cannot do by itself: objects whose
-- shape changed (ALTER TABLE/TYPE), functions whose signature or result type
-- changed (dropped here, created again by the script), renamed objects.
-- tests/test_upgrade.py compares an upgraded database with a fresh install.
select 1;
