"""The command line: ``mfc-hpc COMMAND [args] [PETSc options]`` (:mod:`.main`) and one
module per command (:mod:`.commands`). Nothing in the package imports this layer."""
