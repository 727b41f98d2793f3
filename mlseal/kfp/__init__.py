"""KFP v2 integration: seal your own steps, wire tasks to their services, read KFP's formats."""
