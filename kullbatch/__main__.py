from kullbatch.cli import main

main()
