pytest_plugins = ["emulators.fixtures"]
