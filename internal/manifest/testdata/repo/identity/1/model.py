# placeholder: manifests only read the configuration
