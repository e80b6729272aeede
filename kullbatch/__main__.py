from kullbatch.cli.app import main

main()
