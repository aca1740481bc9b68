from loopmeter.cli import main

main()
