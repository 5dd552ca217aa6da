-- A pull request from a fork may run jobs on `image: host` (the worker's own file system, secrets masked) only
-- when its repository says so (`gantry repo set REPO --fork-host-image true`): by default such a pipeline ends in
-- `error` before any job runs, and forks' jobs run on images only.
ALTER TABLE repos ADD COLUMN fork_host_image BOOLEAN NOT NULL DEFAULT FALSE;
