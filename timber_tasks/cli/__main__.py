from timber_tasks.cli import main

main()
